"""Bundles: walk a photo library, embed it with the image tower, write the bundle and its index."""
