"""How things are measured: the kernel timer, device handling and thread pinning."""
