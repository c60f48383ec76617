"""Ask the memory: render at a camera, text relevancy, 3D target, pose chain."""
