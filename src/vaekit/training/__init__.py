"""Training: the one training loop of the package (the Trainer) and its parts, each in a
module of its own: the step, the run directory, resume state, optimizers and the weight
average, precision, distributed setup. Nothing outside this package imports it but the
CLI, the experiments and the package's public API."""
