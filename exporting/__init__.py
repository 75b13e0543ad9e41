"""Exports of a published adapter people run elsewhere: merged weights, GGUF and an Ollama Modelfile. No Django."""
