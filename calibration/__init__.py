"""shotline.calibration"""
