"""GPU memory a model needs under vLLM or SGLang, and what a GPU can run: pure arithmetic, no I/O.

docs/memory-placement.md explains the estimate, cites the engines' source lines it follows and states its
error per model. Selection (selection/memory_fit.py) asks it which nodes can hold a model, with which
tensor-parallel size and up to which context.
"""
