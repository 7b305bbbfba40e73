"""fixedpoint"""
