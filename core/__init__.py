"""shotline.core"""
