"""The data layer: input sources, image I/O, masks and paired transforms, one implementation each."""
