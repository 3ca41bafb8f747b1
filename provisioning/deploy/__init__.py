"""Deploy: the wheelhouse, push over ssh, install on the device, a fleet by Ansible."""
