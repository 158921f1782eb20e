"""The CIFAR-10 image geometry, owned here: 32x32 RGB images in ten classes.

A module of its own so that the params schema can check the model against the image size
without depending on the archive reader.
"""

IMAGE_SIZE = 32
CHANNELS = 3
NUM_CLASSES = 10
