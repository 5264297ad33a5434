"""Boot container operating systems in libvirt VMs and check what they promise."""

__version__ = "0.1.0"
