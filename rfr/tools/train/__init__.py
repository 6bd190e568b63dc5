"""Training of the embedder's low-resolution fine-tune (issue #17): the fixed identity split and the scripts."""
