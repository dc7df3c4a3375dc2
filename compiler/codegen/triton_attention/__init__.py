"""temporary: varlen op only (until the attnkern branch is merged)"""
