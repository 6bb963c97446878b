"""Evaluation: what a trained model is worth, honestly measured.

The test-set ELBO and its terms, the importance-weighted estimate of log p(x)
(Burda et al. 2015), bits per dimension, reconstruction quality (PSNR, SSIM), the
latent space's active units, FID, and LPIPS (also a training loss). Everything here
reads a model and data and returns numbers; nothing trains or writes files.
"""
