"""Doc-to-LoRA: document -> LoRA adapter.

Ready: the Perceiver hypernetwork (hypernet.py), context features (context.py) and chunked
internalisation (chunking.py). Training, data, baselines and CLIs follow in the D2L issue.
"""
