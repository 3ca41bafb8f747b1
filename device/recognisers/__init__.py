"""Recognisers that add concepts to a photo beyond the image tower's classes.

Each reads a photo (or a downscaled copy of it) and returns what it found, for a
model's fusion step to weight concepts with: :mod:`device.recognisers.colours`
(the basic colour terms covering the photo) and :mod:`device.recognisers.faces`
(faces, with boxes and scores, from MediaPipe's BlazeFace run by LiteRT).
:mod:`device.recognisers.fusion` adds their concepts to the image tower's vector as a
model's ``recognisers`` section says (``device.encoders.ImageEncoder`` calls it).
They use numpy and the device's LiteRT interpreter only.
"""
