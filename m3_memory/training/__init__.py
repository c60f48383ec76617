"""Training the memory: initialisation from RGB-D, the training loop, densification, the build.

Nothing heavy is imported here: ``m3 build --help`` must not wait for torch. Import the modules
(``m3_memory.training.build``, ``.config``, ``.init``, ...) directly.
"""
