"""pneumoloc: weakly supervised pneumonia localization on chest X-rays.

The package is imported by every notebook kernel, so importing it stays cheap:
heavy libraries (torch, timm, grad-cam, captum) are imported inside the modules
and functions that use them, never here.
"""
__version__ = "0.1.0"
__all__ = ["__version__"]
