"""Speed benchmarks: training throughput, gradient-variance draws, IS log p(x).

Run each as `python -m benchmarks.NAME [--full]`; see benchmarks/README.md.
"""
