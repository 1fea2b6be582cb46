"""roomgate benchmarks (issue 6): ``python -m bench`` prints figures; tests never assert timings."""
