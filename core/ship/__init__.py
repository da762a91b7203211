"""Ship: try a model (the Playground over a local OpenAI-compatible endpoint) and put it into service
(deploy exports with a parity check and a model card). The last stage of the loop: it uses evaluation, training
and curation, never the other way round."""
