"""Engine: the workflow, the node activities and the worker factory (worker side only)."""
