"""shotline.sensor"""
