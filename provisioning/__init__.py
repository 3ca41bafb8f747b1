"""Glimpse on the host: build models and bundles, push them to devices.

Imports ``device`` to write exactly what the device reads; never the reverse.
PyTorch and litert-torch are imported only by the commands that need them.
"""
