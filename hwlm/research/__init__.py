"""Research tools built on the library, not needed to train or use a model:

    gradient_flow.py   how far back the gradient of the loss reaches, per position and layer (hwlm-gradflow)
    course.py          the course exercise's encoder-decoder "language model", kept as a checked counterexample
    results.py         curves and evaluation protocols of the logged runs under docs/results (plot_runs)
"""
