"""TFLite conversion (float, fp16, dynamic, int8 PTQ), QAT and export reports."""
