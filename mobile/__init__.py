"""The Android side: adb device handling, running `benchmark_model`, parsing its output."""
