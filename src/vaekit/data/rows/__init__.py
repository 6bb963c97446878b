"""Row sources: datasets that hand out one example at a time, read into a vaekit
`Dataset` (in memory, or streamed when they do not fit) along one path for every kind
(read.py: `from_torch`, `as_dataset`, `--data hf:...`). Each split is a `Source`, the one
protocol (assemble.py, which also splits, limits and chooses to stream): a map-style
torch Dataset (torch_source.py), a Hugging Face datasets.Dataset (hf.py), or an iterable
dataset of either library read once into memory (iterable.py); examples.py turns one
example into an image array and maybe a label. Built on the data core; never imports the
file readers."""
