"""brainshape: brainscores of language models on story-listening fMRI, and their shape."""

__version__ = "0.1.0"
