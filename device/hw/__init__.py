"""The front panel: a button, a status light and a small display, all optional.

One seam (:mod:`device.hw.factory`) hides the hardware: :func:`open_hardware`
returns a :class:`Hardware` built from gpiozero and luma parts when settings
name pins or a display, or a :class:`NullHardware` that does nothing. The
daemon is the one process that owns it, and drives it from its main loop
through a :class:`~device.hw.panel.Panel`. gpiozero and luma are imported only
when a part is configured.
"""

from device.hw.factory import Hardware, HardwareOptions, NullHardware, open_hardware

__all__ = ["Hardware", "HardwareOptions", "NullHardware", "open_hardware"]
