"""Doc-to-LoRA: document -> LoRA adapter.

Modules: hypernet (Perceiver), context (features), chunking, corpus / squad / teacher / data
(training
data and distillation targets), model, train (+ context distillation), internalize, evaluate, cli.
"""
