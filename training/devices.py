"""What accelerator this process can use, for workers to report. No Django."""

import platform


def device_info() -> dict:
    import torch

    info = {"host": platform.node(), "torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if info["cuda"]:
        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info.update(device="cuda", name=props.name, memory_bytes=props.total_memory, devices=torch.cuda.device_count())
    else:
        import os

        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        info.update(device="cpu", name=platform.processor() or platform.machine(), memory_bytes=pages, devices=1)
    return info
