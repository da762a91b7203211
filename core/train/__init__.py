"""Train (sidebar stage): the TrainConfig (config), launching and managing runs (runs), the training process
(worker) and the SFT pieces it assembles (sft)."""
