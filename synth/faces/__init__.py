"""Faces: detection and 68 landmarks, tracking, alignment, landmark images, the piecewise-affine warp."""
