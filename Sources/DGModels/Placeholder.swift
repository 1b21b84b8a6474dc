import DGLayers
