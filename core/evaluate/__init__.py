"""Evaluate (sidebar stage): systems, eval sets and generation launches (evalsets), the generation process
(generate, configured by generate_config), blind review (review), results and exports (results), and the
statistics behind them (stats)."""
