"""The model: method registry, backbones, the network (preprocess + backbone + head) and its checkpoints."""
