"""Experiments: paper reproductions (Kingma & Welling 2013, Figure 2 and Appendix A),
run through the same Trainer as every other run."""
