"""Files in and out: atomic writes, the run directory's model and state files, and the
Hugging Face Hub. Nothing here executes code read from a file: weights are safetensors,
configs JSON or YAML, the resume state `torch.load(weights_only=True)`."""
