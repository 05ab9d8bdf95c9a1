"""What a CNN does and what a trained one looks at: the lesson's pictures, live.

``lesson``/``demos``: convolution and pooling on the lesson's numbers or the user's image.
``layers``: which layers a network has and which can be hooked. ``gradcam``: heat maps
(through the ``grad-cam`` package). ``receptive``: receptive fields along the network's graph.
``run``: one function per ``cnnlab explain`` command on a run folder. ``report``: the run
report's Explain figures, drawn at the end of training (``cnnlab.evaluation`` calls it).
"""
