"""Image edits and inversion: what GANalyze, Steerability and real-image editing apply.

- ``editing.edits``: the image transformations a walk learns to reproduce (zoom, scale, shifts,
  rotation, colour, brightness), each with its valid-region mask and its walk in factor units;
- ``editing.inversion``: finding the latent of an image (Adam on several starts, an optional
  norm ball), used by steerability's targets, real-image editing and the explorer.
"""
