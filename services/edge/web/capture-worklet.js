// Microphone capture on the audio thread: mixes to mono, downsamples to the
// target rate and posts PCM16LE frames of `frameMs` to the main thread.
// Typed arrays use the platform's byte order, which is little-endian on every
// platform browsers run on, so an Int16Array buffer is already PCM16LE.

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRate = 16000, frameMs = 40 } = options.processorOptions || {};
    this.step = sampleRate / targetRate; // input samples per output sample
    this.frameLength = Math.round((targetRate * frameMs) / 1000);
    this.frame = new Int16Array(this.frameLength);
    this.filled = 0;
    this.sum = 0; // box filter over each output sample's span: a cheap anti-alias
    this.count = 0;
    this.pos = 0;
    this.last = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true; // source not connected yet
    const n = channels[0].length;
    for (let i = 0; i < n; i++) {
      let x = 0;
      for (const ch of channels) x += ch[i];
      this.sum += x / channels.length;
      this.count++;
      this.pos += 1;
      // `while`, not `if`: below the target rate one input yields several outputs.
      while (this.pos >= this.step) {
        this.pos -= this.step;
        const v = this.count ? this.sum / this.count : this.last;
        this.last = v;
        this.sum = 0;
        this.count = 0;
        this.push(v);
      }
    }
    return true;
  }

  push(v) {
    const s = Math.max(-1, Math.min(1, v));
    this.frame[this.filled++] = s < 0 ? s * 0x8000 : s * 0x7fff;
    if (this.filled === this.frameLength) {
      // Transfer, not copy: the main thread owns the buffer from here on.
      this.port.postMessage(this.frame.buffer, [this.frame.buffer]);
      this.frame = new Int16Array(this.frameLength);
      this.filled = 0;
    }
  }
}

registerProcessor("parley-capture", CaptureProcessor);
