"""Finding what is wrong with the data itself: images whose label is probably wrong (``cnnlab data label-issues``)."""
