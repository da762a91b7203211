"""The ``finetune-studio`` command line: main (entry point and foundation commands), one module per stage."""
