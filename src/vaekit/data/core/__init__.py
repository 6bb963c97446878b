"""The data core, which every source produces and the training loop reads: the in-memory
`Dataset` and its batching (dataset.py), rows streamed when a batch needs them
(streaming.py), the validation split (validation.py), arrays a user brings (arrays.py),
the crops and flips of training batches (augment.py) and the limits on reading data that
may be hostile (untrusted.py). It imports nothing from the files and row-source wings."""
