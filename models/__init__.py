"""shotline.models"""
