import CDGKernels
import Foundation

/// 2-D convolution (cross-correlation, as PyTorch's Conv2d) as products W [Cout, Cin kh kw] x im2col(x).
///
/// x [N, Cin, H, W], w [Cout, Cin, kh, kw], bias [Cout]; output [N, Cout, Hout, Wout] with
/// Hout = (H + 2 padding + paddingEnd - kh) / stride + 1.
///
/// The im2col matrix is never built: the AVX-512 product packs its blocks straight from x (or, for few
/// output channels, reads x in place), a pointwise convolution reads x as it is, and the portable
/// path materialises it in blocks of at most `columnBudget` bytes (`GEMM.fallback`).
extension Kernels {
    /// Upper bound, in bytes, for an im2col (or col2im) buffer on the paths that build one (at least one
    /// output row or column is always used). 16 MiB unless set; atomic (tests change it).
    static var columnBudget: Int {
        get { let v = dg_setting(Int32(DG_SETTING_COLUMN_BUDGET)); return v > 0 ? v : 16 << 20 }
        set { dg_set_setting(Int32(DG_SETTING_COLUMN_BUDGET), Swift.max(1, newValue)) }
    }

    struct ConvGeometry {
        /// `padding` on every side, plus `paddingEnd` more at the bottom and on the right (diffusers'
        /// downsampling pads (0, 1, 0, 1) before an unpadded convolution).
        let n, cin, h, w, cout, kh, kw, stride, padding, paddingEnd, hout, wout: Int
        var kdim: Int { cin * kh * kw }
        var plane: Int { hout * wout }
        var isPointwise: Bool { kh == 1 && kw == 1 && stride == 1 && padding == 0 && paddingEnd == 0 }

        init(x: [Int], w wshape: [Int], stride: Int, padding: Int, paddingEnd: Int = 0) {
            if x.count != 4 || wshape.count != 4 { fatalError("conv2d: x must be [N, Cin, H, W] and w [Cout, Cin, kh, kw], got \(x) and \(wshape)") }
            if x[1] != wshape[1] { fatalError("conv2d: input has \(x[1]) channels, weight expects \(wshape[1])") }
            if stride < 1 || padding < 0 || paddingEnd < 0 { fatalError("conv2d: bad stride \(stride) / padding \(padding) + \(paddingEnd)") }
            n = x[0]; cin = x[1]; h = x[2]; w = x[3]
            cout = wshape[0]; kh = wshape[2]; kw = wshape[3]
            self.stride = stride; self.padding = padding; self.paddingEnd = paddingEnd
            let extra = 2 * padding + paddingEnd
            if h + extra < kh || w + extra < kw { fatalError("conv2d: kernel \(kh)x\(kw) larger than padded input \(h)x\(w)") }
            hout = (h + extra - kh) / stride + 1
            wout = (w + extra - kw) / stride + 1
        }

        /// Valid output columns [lo, hi) for kernel column kj: those reading inside the image.
        func columnRange(_ kj: Int) -> (Int, Int) {
            // ox stride - padding + kj in [0, w)
            let lo = Swift.max(0, Kernels.ceilDiv(padding - kj, stride))
            let hi = Swift.min(wout, Kernels.floorDiv(w - 1 + padding - kj, stride) + 1)
            return (lo, Swift.max(lo, hi))
        }
    }

    @inline(__always) static func ceilDiv(_ a: Int, _ b: Int) -> Int { a >= 0 ? (a + b - 1) / b : -((-a) / b) }
    @inline(__always) static func floorDiv(_ a: Int, _ b: Int) -> Int { a >= 0 ? a / b : -((-a + b - 1) / b) }

    /// The adjoint of im2col for output rows oy0..<oy1 of one sample: dx[c, oy s - p + ki, ox s - p + kj]
    /// += cols[((c kh + ki) kw + kj) ld + (oy - oy0) wout + ox] (threads own channels, so there are no
    /// races and the order of additions is fixed).
    static func col2im(_ g: ConvGeometry, _ cols: UnsafePointer<Float>, _ oy0: Int, _ oy1: Int,
                       _ dx: UnsafeMutablePointer<Float>, ld: Int) {
        let ranges = (0..<g.kw).map { g.columnRange($0) }
        ranges.withUnsafeBufferPointer { ranges in
            let ranges = ranges
            Parallel.forEach(g.cin, minimumChunk: grain(g.kh * g.kw * (oy1 - oy0) * g.wout)) { cr in
                for c in cr {
                    let xc = dx + c * g.h * g.w
                    for ki in 0..<g.kh {
                        for kj in 0..<g.kw {
                            let row = cols + ((c * g.kh + ki) * g.kw + kj) * ld
                            let (lo, hi) = ranges[kj]
                            if lo >= hi { continue }
                            let shift = kj - g.padding
                            for oy in oy0..<oy1 {
                                let iy = oy * g.stride - g.padding + ki
                                if iy < 0 || iy >= g.h { continue }
                                let src = row + (oy - oy0) * g.wout
                                let dst = xc + iy * g.w + shift
                                if g.stride == 1 {
                                    for ox in lo..<hi { dst[ox] += src[ox] }
                                } else {
                                    let s = g.stride
                                    for ox in lo..<hi { dst[ox * s] += src[ox] }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    public static func conv2d(_ x: Tensor, _ w: Tensor, _ bias: Tensor?, stride: Int, padding: Int, paddingEnd: Int = 0) -> Tensor {
        let g = ConvGeometry(x: x.shape, w: w.shape, stride: stride, padding: padding, paddingEnd: paddingEnd)
        let xc = f32(x), wc = winograd(g) ? winogradWeight(w) : productWeight(w), bc = bias.map(f32)
        if let bc, bc.count != g.cout { fatalError("conv2d: bias has \(bc.count) values for \(g.cout) channels") }
        let out = Tensor(uninitialized: [g.n, g.cout, g.hout, g.wout])
        defer { withExtendedLifetime((xc, wc, bc, out)) {} }
        if out.count == 0 { return out }
        countFlops(g.n * g.cout * g.kdim * g.plane)
        convolve(g, pointer(xc), wc, bc.map { UnsafePointer(pointer($0)) }, pointer(out))
        return out
    }

    /// out[s] = W im2col(x[s]) + bias, sample by sample: one product W [Cout, Cin kh kw] x the
    /// implicit im2col matrix, which the AVX-512 kernel packs straight from x (a pointwise
    /// convolution reads x as it is), or through Winograd (`winograd`). w: from `productWeight` (f32,
    /// or bf16 for the bf16 kernel), or as stored for Winograd.
    static func convolve(_ g: ConvGeometry, _ xp: UnsafePointer<Float>, _ w: Tensor,
                         _ bias: UnsafePointer<Float>?, _ op: UnsafeMutablePointer<Float>) {
        if winograd(g) { return winogradConvolve(g, xp, w, transposed: false, bias, op) }
        let plane = g.plane, inPlane = g.cin * g.h * g.w, outSample = g.cout * plane
        func sample(_ s: Int) {
            let source = g.isPointwise ? GEMM.matrix(xp + s * inPlane, rowStride: plane, columnStride: 1)
                                       : GEMM.im2col(g, xp + s * inPlane)
            gemm(m: g.cout, n: plane, k: g.kdim, weight: w, b: source, c: op + s * outSample, ldc: plane, rowBias: bias)
        }
        if samplewise(g) {
            withSingleThreadedBLAS { Parallel.forEach(g.n, minimumChunk: 1) { r in for s in r { sample(s) } } }
        } else {
            for s in 0..<g.n { sample(s) }
        }
    }

    /// Whether a convolution runs as Winograd (`winogradConvolve`; F(2x2, 3x3), or F(4x4, 3x3) where
    /// `winograd4` says): 3x3, stride 1, padding 1, on our kernels, with at least `winogradTiles` 2x2
    /// output tiles per sample and `winogradChannels` channels in and out; its products in bf16 where
    /// `winogradBF16Products`.
    /// Measured with `dginstyle bench sgemm --winograd [--bf16]` (docs/PERFORMANCE.md, "Winograd").
    static func winograd(_ g: ConvGeometry) -> Bool {
        let tiles = winogradTiles
        return tiles >= 0 && GEMM.vectorized && g.kh == 3 && g.kw == 3 && g.stride == 1 && g.padding == 1
            && g.paddingEnd == 0 && g.hout == g.h && g.wout == g.w
            && Swift.min(g.cin, g.cout) >= winogradChannels && (g.h + 1) / 2 * ((g.w + 1) / 2) >= Swift.max(1, tiles)
    }
    /// Whether a Winograd convolution (`winograd`) runs as F(4x4, 3x3): f32 products and at least
    /// `winograd4Tiles` 4x4 output tiles per sample.
    static func winograd4(_ g: ConvGeometry, bf16Products: Bool) -> Bool {
        let tiles = winograd4Tiles
        return !bf16Products && tiles >= 0 && (g.h + 3) / 4 * ((g.w + 3) / 4) >= Swift.max(1, tiles)
    }
    /// Whether Winograd's products run in bf16: a forward's bf16 weight where `GEMM.bf16` runs.
    static func winogradBF16Products(_ w: Tensor, transposed: Bool) -> Bool { !transposed && w.dtype == .bf16 && GEMM.bf16 }
    /// Whether `conv2d` of an input of this shape with this weight runs as Winograd (`winograd`).
    public static func usesWinograd(x: [Int], weight w: Tensor, stride: Int, padding: Int) -> Bool {
        winograd(ConvGeometry(x: x, w: w.shape, stride: stride, padding: padding))
    }
    /// The output block side a forward `conv2d` of this shape with this weight computes: 4 for Winograd
    /// F(4x4, 3x3), 2 for F(2x2, 3x3), 0 off Winograd.
    public static func winogradBlock(x: [Int], weight w: Tensor, stride: Int, padding: Int) -> Int {
        let g = ConvGeometry(x: x, w: w.shape, stride: stride, padding: padding)
        guard winograd(g) else { return 0 }
        return winograd4(g, bf16Products: winogradBF16Products(w, transposed: false)) ? 4 : 2
    }
    /// The fewest output tiles per sample for `winograd` (negative: never). Atomic (tests and
    /// `bench sgemm --winograd` change it).
    public static var winogradTiles: Int {
        get { let v = dg_setting(Int32(DG_SETTING_WINOGRAD_TILES)); return v == 0 ? defaultWinogradTiles : v }
        set { dg_set_setting(Int32(DG_SETTING_WINOGRAD_TILES), newValue) }
    }
    /// Measured per CPU family (docs/PERFORMANCE.md, "Winograd"): on the AMD EPYC (Zen 4) 64 tiles
    /// (16 x 16 outputs: the third level of a 512 px UNet, the second of a 256 px one, whose input
    /// gradients gain 1.5-1.8x there), elsewhere 256 (32 x 32 outputs: on the Intel Xeon the 16 x 16
    /// input gradients tie) — unless DGINSTYLE_WINOGRAD says "off" (-1) or a number of tiles ("on":
    /// the default; anything else is named on stderr once and ignored).
    static let defaultWinogradTiles = tiles(from: "DGINSTYLE_WINOGRAD", measured: dg_cpu_is_amd() != 0 ? 64 : 256)
    /// A tile threshold from the environment variable `name`: "off" (-1), "on" (`on`), a positive
    /// number of tiles, or unset (`measured`); anything else is named on stderr once and ignored.
    static func tiles(from name: String, measured: Int, on: Int? = nil) -> Int {
        guard let v = ProcessInfo.processInfo.environment[name] else { return measured }
        if v == "on" { return on ?? measured }
        if v == "off" { return -1 }
        if let n = Int(v), n > 0 { return n }
        FileHandle.standardError.write(Data("dginstyle: \(name)=\(v) is not \"on\", \"off\" or a positive number of tiles; using the default (\(measured))\n".utf8))
        return measured
    }
    public static let winogradChannels = 32

    /// The fewest 4x4 output tiles per sample from which a Winograd convolution with f32 products (a
    /// forward or an input gradient) runs as F(4x4, 3x3) (4x fewer multiply-adds than direct, against
    /// F(2x2, 3x3)'s 2.25x; its sums round ~5x more: docs/PERFORMANCE.md, "F(4x4, 3x3)"); negative: never.
    /// DGINSTYLE_WINOGRAD4 says "on" (64 tiles on any CPU), "off" or a number of tiles. Atomic (tests and
    /// `bench sgemm --winograd` change it).
    public static var winograd4Tiles: Int {
        get { let v = dg_setting(Int32(DG_SETTING_WINOGRAD4_TILES)); return v == 0 ? defaultWinograd4Tiles : v }
        set { dg_set_setting(Int32(DG_SETTING_WINOGRAD4_TILES), newValue) }
    }
    /// Measured on the AMD EPYC (Zen 4): from 32 x 32 outputs (64 tiles) F(4x4) runs the UNet's and
    /// VAE's convolutions 1.3-1.7x faster than F(2x2), their input gradients 1.25-1.65x; at 16 x 16
    /// 0.4-0.96x. Not measured yet on the Intel Xeon, which keeps F(2x2) until it is (`dginstyle bench
    /// sgemm --winograd` prints both).
    static let defaultWinograd4Tiles = tiles(from: "DGINSTYLE_WINOGRAD4", measured: dg_cpu_is_amd() != 0 ? 64 : -1, on: 64)
    /// Bytes of transformed input and products ((side + 2)² (cin + cout) floats a tile) per band of tile rows
    /// (at least one row). Atomic (tests change it).
    static var winogradBand: Int {
        get { let v = dg_setting(Int32(DG_SETTING_WINOGRAD_BAND)); return v > 0 ? v : 32 << 20 }
        set { dg_set_setting(Int32(DG_SETTING_WINOGRAD_BAND), Swift.max(0, newValue)) }
    }

    /// A weight as Winograd's filter transform reads it: a bf16 weight as stored (the transform widens
    /// it, or keeps U in bf16 for the bf16 products), anything else as f32.
    static func winogradWeight(_ w: Tensor) -> Tensor { w.dtype == .bf16 ? w.contiguous() : f32(w) }

    /// Bytes of transformed filter per block of the stored weight's rows (at least one row): the
    /// transformed filter is 16/9 of the weight (36/9 with F(4x4); 210 MB for SD 1.5's 1280 x 2560
    /// convolutions in f32 with F(2x2)),
    /// so larger ones go in blocks. Atomic (tests change it).
    static var winogradFilter: Int {
        get { let v = dg_setting(Int32(DG_SETTING_WINOGRAD_FILTER)); return v > 0 ? v : 64 << 20 }
        set { dg_set_setting(Int32(DG_SETTING_WINOGRAD_FILTER), Swift.max(0, newValue)) }
    }

    /// out = conv(x, w) + bias through Winograd F(2x2, 3x3), or F(4x4, 3x3) where `winograd4` says (see
    /// Sources/CDGKernels/winograd.c): per sample and band of tile rows the input transform, 16 (36)
    /// products U[xi] [cout, cin] x V[xi] [cin, tiles] and the output transform, with the filter
    /// transformed in blocks of the stored weight's rows (`winogradFilter`). transposed: `w` is the
    /// forward weight [cout', cin', 3, 3] of the convolution whose input gradient this computes (g: the
    /// geometry of that gradient's convolution, cin = cout', cout = cin'); the filter transform turns
    /// each kernel by 180 degrees, its U[xi] is read transposed, and a block of the weight's rows is a
    /// block of the products' k, summed over blocks. Where `winogradBF16Products` (F(2x2) only): U
    /// rounded to bf16 and the products in bf16 (V rounded at the product's input), as the GEMM route's
    /// bf16 kernel. Every split is fixed by the shape: results do not depend on the thread count.
    static func winogradConvolve(_ g: ConvGeometry, _ xp: UnsafePointer<Float>, _ w: Tensor, transposed: Bool,
                                 _ bias: UnsafePointer<Float>?, _ op: UnsafeMutablePointer<Float>) {
        let bf16Products = winogradBF16Products(w, transposed: transposed)
        let f4 = winograd4(g, bf16Products: bf16Products)
        let side = f4 ? 4 : 2, xis = (side + 2) * (side + 2)   // output block side; products per block
        let m = g.cout, k = g.cin, th = (g.h + side - 1) / side, tw = (g.w + side - 1) / side
        let fitting = Swift.max(1, Swift.min(th, winogradBand / Swift.max(1, 4 * xis * (m + k) * tw)))
        let bandRows = (th + (th + fitting - 1) / fitting - 1) / ((th + fitting - 1) / fitting)   // even bands
        let (wout, win) = transposed ? (k, m) : (m, k)   // the stored weight's channels
        let uSize = bf16Products ? 2 : 4
        let blocks = Swift.min(wout, Swift.max(1, (xis * wout * win * uSize + winogradFilter - 1) / winogradFilter))
        let blockRows = (wout + blocks - 1) / blocks
        let u = Tensor(uninitialized: [xis * blockRows * win], dtype: bf16Products ? .bf16 : .f32)
        let v = Tensor(uninitialized: [xis * k * bandRows * tw]), products = Tensor(uninitialized: [xis * m * bandRows * tw])
        defer { withExtendedLifetime((u, v, products, w)) {} }
        let up = u.rawPointer, vp = pointer(v), mp = pointer(products)
        let wp = UnsafeRawPointer(w.rawPointer), bf16: Int32 = w.dtype == .bf16 ? 1 : 0
        // U of the weight's rows r0..<r1: u[xi (r1 - r0) win + (r - r0) win + c].
        func transformFilter(_ r0: Int, _ r1: Int) {
            Profiler.measure("conv2d: winograd filter") {
                let rows = wp + r0 * win * 9 * w.dtype.byteSize
                Parallel.forEach(r1 - r0, minimumChunk: grain(win * 4 * xis)) { r in
                    dg_winograd_filter(rows, bf16, r1 - r0, win, r.lowerBound, r.upperBound, transposed ? 1 : 0, up,
                                       bf16Products ? 1 : 0, Int32(side))
                }
            }
        }
        // body(y, ty0, ty1, tiles) for each sample and band of tile rows, after the band's input transform
        // (kept in v: a call with one band in all transforms it once for every block of the filter).
        var transformed: (sample: Int, ty0: Int)? = nil
        func forEachBand(_ body: (UnsafeMutablePointer<Float>, Int, Int, Int) -> Void) {
            for s in 0..<g.n {
                let x = xp + s * g.cin * g.h * g.w, y = op + s * g.cout * g.h * g.w
                for ty0 in stride(from: 0, to: th, by: bandRows) {
                    let ty1 = Swift.min(th, ty0 + bandRows), t = (ty1 - ty0) * tw
                    if transformed?.sample != s || transformed?.ty0 != ty0 {
                        Profiler.measure("conv2d: winograd input") {
                            Parallel.forEach(k, minimumChunk: grain(t * 4 * xis)) { r in
                                dg_winograd_input(x, g.h, g.w, r.lowerBound, r.upperBound, ty0, ty1, vp, k * t, t, Int32(side))
                            }
                        }
                        transformed = (s, ty0)
                    }
                    body(y, ty0, ty1, t)
                }
            }
        }
        func transformOutput(_ y: UnsafeMutablePointer<Float>, _ c0: Int, _ c1: Int, _ ty0: Int, _ ty1: Int, _ t: Int) {
            Profiler.measure("conv2d: winograd output") {
                Parallel.forEach(c1 - c0, minimumChunk: grain(t * 4 * xis)) { r in
                    dg_winograd_output(mp, m * t, t, c0 + r.lowerBound, c0 + r.upperBound, ty0, ty1, g.h, g.w, bias, y, Int32(side))
                }
            }
        }
        if !transposed {
            // A block of output channels at a time: its rows of the products, then of the output.
            for r0 in stride(from: 0, to: m, by: blockRows) {
                let r1 = Swift.min(m, r0 + blockRows), rows = r1 - r0
                transformFilter(r0, r1)
                forEachBand { y, ty0, ty1, t in
                    for xi in 0..<xis {
                        let b = GEMM.matrix(vp + xi * k * t, rowStride: t, columnStride: 1), c = mp + xi * m * t + r0 * t
                        if bf16Products {
                            GEMM.gemmBF16(m: rows, n: t, k: k, a: UnsafeRawPointer(up) + 2 * xi * rows * k, aBF16: true,
                                          ars: k, aks: 1, b: b, c: c, ldc: t)
                        } else {
                            GEMM.gemm(m: rows, n: t, k: k, a: pointer(u) + xi * rows * k, ars: k, aks: 1, b: b, c: c, ldc: t)
                        }
                    }
                    transformOutput(y, r0, r1, ty0, ty1, t)
                }
            }
            return
        }
        // The input gradient: every band's products summed over the blocks of k (the filter transformed
        // once when it is one block, else per band).
        if blocks == 1 { transformFilter(0, k) }
        forEachBand { y, ty0, ty1, t in
            for q0 in stride(from: 0, to: k, by: blockRows) {
                let q1 = Swift.min(k, q0 + blockRows), rows = q1 - q0
                if blocks > 1 { transformFilter(q0, q1) }
                for xi in 0..<xis {
                    GEMM.gemm(m: m, n: t, k: rows, a: pointer(u) + xi * rows * m, ars: 1, aks: m,
                              b: GEMM.matrix(vp + xi * k * t + q0 * t, rowStride: t, columnStride: 1),
                              beta: q0 == 0 ? 0 : 1, c: mp + xi * m * t, ldc: t)
                }
            }
            transformOutput(y, 0, m, ty0, ty1, t)
        }
    }

    /// Whether a batch's samples go to the threads whole, each sample's product on one thread: for
    /// small samples (the miniature's 16 x 16 latents, MRLF's windows), where splitting every sample's
    /// product between threads costs a synchronisation per sample. The same bits either way: a
    /// product's sums do not depend on how it is split.
    static func samplewise(_ g: ConvGeometry) -> Bool {
        g.n > 1 && Parallel.threads > 1 && !GEMM.serial && g.cout * g.kdim * g.plane <= samplewiseWork
    }
    static let samplewiseWork = 1 << 24

    /// Whether `conv2dBackward` takes the weight gradient straight from the image: 3x3, stride 1,
    /// padding 1, with few output channels, where packing the transposed im2col costs as much as the
    /// product (`dginstyle bench sgemm --backward`: a 16-channel convolution's weight gradient took
    /// 2.6x its forward's time through the product).
    static func directWeightGradient(_ g: ConvGeometry) -> Bool {
        GEMM.vectorized && g.kh == 3 && g.kw == 3 && g.stride == 1 && g.padding == 1 && g.paddingEnd == 0
            && g.hout == g.h && g.wout == g.w && g.cout <= directWeightGradientChannels
    }
    /// The most output channels `directWeightGradient` takes (negative: none). Atomic (tests and
    /// `bench sgemm --backward` change it).
    public static var directWeightGradientChannels: Int {
        get { let v = dg_setting(Int32(DG_SETTING_DIRECT_WEIGHT_GRADIENT)); return v == 0 ? 96 : v }
        set { dg_set_setting(Int32(DG_SETTING_DIRECT_WEIGHT_GRADIENT), newValue) }
    }

    /// Gradients of `conv2d` for the upstream gradient gy [N, Cout, Hout, Wout]: only the requested
    /// ones. dW = sum over samples of gy_s im2col(x_s)^T (accumulated in sample order, or
    /// `directWeightGradient`);
    /// dx: for stride 1, the convolution of gy with the flipped, transposed kernel (padding kh-1-p);
    /// else col2im(W^T gy_s); dbias = sum of gy over samples and positions.
    public static func conv2dBackward(_ gy: Tensor, x: Tensor, w: Tensor, stride: Int, padding: Int, paddingEnd: Int = 0,
                                      needInput: Bool, needWeight: Bool, needBias: Bool) -> (x: Tensor?, w: Tensor?, bias: Tensor?) {
        let g = ConvGeometry(x: x.shape, w: w.shape, stride: stride, padding: padding, paddingEnd: paddingEnd)
        if gy.shape != [g.n, g.cout, g.hout, g.wout] {
            fatalError("conv2dBackward: gradient shape \(gy.shape), expected \([g.n, g.cout, g.hout, g.wout])")
        }
        let gc = f32(gy)
        let xc = needWeight ? f32(x) : x
        // The input gradient of a stride-1 convolution is a forward-style convolution of gy with the
        // kernel turned and transposed (geometry h); through Winograd it reads a bf16 weight as stored.
        let h = g.stride == 1 && g.kh == g.kw && g.padding <= g.kh - 1 && g.paddingEnd == 0 && !g.isPointwise
            ? ConvGeometry(x: [g.n, g.cout, g.hout, g.wout], w: [g.cin, g.cout, g.kh, g.kw], stride: 1, padding: g.kh - 1 - g.padding)
            : nil
        let winogradInput = needInput && h.map(winograd) == true
        let wc = needInput ? (winogradInput ? winogradWeight(w) : f32(w)) : w
        let dx = needInput ? Tensor(uninitialized: x.shape) : nil
        let dw = needWeight ? Tensor(uninitialized: w.shape) : nil
        let db = needBias ? Tensor(uninitialized: [g.cout]) : nil
        defer { withExtendedLifetime((gc, xc, wc, dx, dw, db)) {} }
        if let t = dx, gy.count == 0 { t.storage.base.initializeMemory(as: UInt8.self, repeating: 0, count: t.byteCount) }
        if let t = dw, gy.count == 0 { t.storage.base.initializeMemory(as: UInt8.self, repeating: 0, count: t.byteCount) }
        if let t = db, gy.count == 0 { t.storage.base.initializeMemory(as: UInt8.self, repeating: 0, count: t.byteCount) }
        if gy.count == 0 { return (dx, dw, db) }
        let gp = pointer(gc), plane = g.plane, inPlane = g.cin * g.h * g.w, outSample = g.cout * plane

        if let db {
            let dbp = pointer(db)
            Parallel.forEach(g.cout, minimumChunk: grain(g.n * plane)) { r in
                for c in r {
                    var s = 0.0
                    for b in 0..<g.n { s += sum(gp + (b * g.cout + c) * plane, plane) }
                    dbp[c] = Float(s)
                }
            }
        }
        if let dw { Profiler.measure("conv2d.backward: dw") {   // dW [Cout, K] (+)= gy_s [Cout, HW] im2col(x_s)^T [HW, K]
            let xp = pointer(xc), dwp = pointer(dw)
            if directWeightGradient(g) {
                // Few output channels: straight from the image (dg_conv3x3_weight_gradient).
                dwp.initialize(repeating: 0, count: dw.count)
                let tiles = (g.cout + 2) / 3 * g.cin
                Parallel.forEach(tiles, minimumChunk: grain(g.n * plane * 27)) { r in
                    dg_conv3x3_weight_gradient(g.n, g.cin, g.cout, g.h, g.w, xp, gp, dwp, r.lowerBound, r.upperBound)
                }
                return
            }
            for s in 0..<g.n {
                let source = g.isPointwise ? GEMM.matrix(xp + s * inPlane, rowStride: 1, columnStride: plane)
                                           : GEMM.im2col(g, xp + s * inPlane, transposed: true)
                GEMM.gemm(m: g.cout, n: g.kdim, k: plane, a: gp + s * outSample, ars: plane, aks: 1, b: source,
                          beta: s == 0 ? 0 : 1, c: dwp, ldc: g.kdim)
            }
        } }
        guard let dx else { return (nil, dw, db) }
        let wp = pointer(wc), dxp = pointer(dx)
        if g.isPointwise {   // dx_s [Cin, HW] = W^T gy_s
            for s in 0..<g.n {
                GEMM.gemm(m: g.cin, n: plane, k: g.cout, a: wp, ars: 1, aks: g.cin,
                          b: GEMM.matrix(gp + s * outSample, rowStride: plane, columnStride: 1),
                          c: dxp + s * inPlane, ldc: plane)
            }
        } else if let h {
            // dx = gy convolved with W'[c, o, ki, kj] = W[o, c, kh-1-ki, kw-1-kj], padding kh-1-p: a
            // forward-style product over im2col(gy), with W' read from W in place.
            Profiler.measure("conv2d.backward: dx") {
                precondition(h.hout == g.h && h.wout == g.w, "conv2dBackward: transposed geometry")
                if winogradInput { return winogradConvolve(h, gp, wc, transposed: true, nil, dxp) }
                for s in 0..<g.n {
                    GEMM.gemmConvTransposed(cin: g.cin, cout: g.cout, kk: g.kh * g.kw, n: inPlane / g.cin, w: wp,
                                            b: GEMM.im2col(h, gp + s * outSample), c: dxp + s * inPlane, ldc: inPlane / g.cin)
                }
            }
        } else {
            // dcols [K, band] = W^T gy_s (band of output rows), scattered back by col2im.
            dxp.initialize(repeating: 0, count: g.n * inPlane)
            let band = Swift.max(1, Swift.min(g.hout, Kernels.columnBudget / Swift.max(1, g.kdim * g.wout * 4)))
            let cols = UnsafeMutablePointer<Float>.allocate(capacity: g.kdim * band * g.wout)
            defer { cols.deallocate() }
            for s in 0..<g.n {
                for oy0 in Swift.stride(from: 0, to: g.hout, by: band) {
                    let oy1 = Swift.min(g.hout, oy0 + band), ncols = (oy1 - oy0) * g.wout
                    GEMM.gemm(m: g.kdim, n: ncols, k: g.cout, a: wp, ars: 1, aks: g.kdim,
                              b: GEMM.matrix(gp + s * outSample + oy0 * g.wout, rowStride: plane, columnStride: 1),
                              c: cols, ldc: ncols)
                    col2im(g, cols, oy0, oy1, dxp + s * inPlane, ld: ncols)
                }
            }
        }
        return (dx, dw, db)
    }
}
