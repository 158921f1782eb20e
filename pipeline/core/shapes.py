"""The CIFAR-10 image geometry, owned here: 32x32 RGB images in ten classes.

A module of its own so that the params schema can check the model against the image size
without depending on the archive reader.
"""

IMAGE_SIZE = 32
CHANNELS = 3
NUM_CLASSES = 10
# One image in model layout (height, width, channels): the only place this shape is spelt out.
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, CHANNELS)
