"""shotline.hub"""
