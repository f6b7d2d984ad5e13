"""The MBConv encoding: 5 searched stages of 2/4/4/4/4 layers, 4 ops per layer (BossNAS's PRIMITIVES order).

Pure Python (no torch): shared by the space, the networks and the standalone export.
"""

MBCONV_OPS = ((6.0, 3), (6.0, 5), (3.0, 3), (3.0, 5))  # (expansion, kernel)
MBCONV_OP_NAMES = ("MB6_3x3_se0.25", "MB6_5x5_se0.25", "MB3_3x3_se0.25", "MB3_5x5_se0.25")
MBCONV_STAGES = ((24, 2, 2), (40, 2, 4), (80, 2, 4), (112, 1, 4), (192, 2, 4))  # (width, stride, layers), searched
MBCONV_TAIL = (320, 1)  # the fixed last layer [320, 1, 1]: (width, stride), op MBCONV_TAIL_OP
MBCONV_TAIL_OP = 0  # MB6 3x3
MBCONV_STEM_WIDTH = 32
MBCONV_FIRST_WIDTH = 16
