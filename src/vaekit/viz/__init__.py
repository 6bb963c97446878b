"""Pictures and pages: image grids, charts, the figures of a trained model, the HTML
report and the latent explorer."""
