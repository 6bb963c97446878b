"""Row sources: datasets that hand out one example at a time, read into a vaekit
`Dataset` (in memory, or streamed when they do not fit): torch Datasets and DataLoaders
(torch_source.py), Hugging Face datasets (hf.py), iterable datasets of either kind
(iterable.py); examples.py turns one example into an image array and maybe a label,
assemble.py does the split, the limits and the choice to stream. Built on the data core;
never imports the file readers."""
