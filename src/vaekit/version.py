"""The package's version, the one place it is written: a leaf module, so that the modules
that stamp it on what they write (config.json, reports, model cards, trackers) need not
import the package root."""

__version__ = "0.2.0.dev0"
