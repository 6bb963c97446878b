"""The diffusers bridge, in one place: diffusers' AutoencoderKL and VQModel as vaekit models
and back.

- autoencoderkl.py: the pair (diffusers' own Encoder and Decoder modules, registered as
  autoencoderkl-encoder / autoencoderkl-decoder), its config and its state-dict keys;
  autoencoderkl_fast.py: the CPU fast paths inside it; vqmodel.py: diffusers' VQModel
  (the same halves with one output map, the codebook between them) as a vaekit VQ-VAE.
- init.py: how model.* becomes the pair (`model.arch autoencoderkl` from scratch, or
  `model.init diffusers:PATH_OR_REPO` from an existing AutoencoderKL).
- model.py: any diffusers AutoencoderKL as a vaekit VAE (`vaekit.load("diffusers:REF")`).
- export.py: the folder `AutoencoderKL.from_pretrained` reads (`vaekit export --format
  diffusers`); export_checks.py: what an export must hold before it is written.

The library itself is imported only when such a model is built, read or written
(`pip install 'vaekit[diffusers]'`); absolute imports, so `import diffusers` inside this
subpackage is always the library. Layers: the bridge uses models/ (the protocol, the
registry, VAE) and io/; models/builtin.py, pretrained.py and described.py reach the
bridge's model.* plan by module, never this package's root, so there is no cycle.
"""
