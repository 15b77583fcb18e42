// HASH, HMAC-HASH and HKDF from the Noise spec (rev 34, sections 4.3 and 12) for each hash of the
// suites, through OpenSSL: its HMAC pads the key to the digest's own block length (64 bytes for
// BLAKE2s and SHA256, 128 for BLAKE2b and SHA512), as the spec's HMAC requires.

import CRatholeCrypto

extension NoiseHash {
    /// HASH(a || b).
    func hash(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) -> [UInt8] {
        let length = hashLength
        return [UInt8](unsafeUninitializedCapacity: length) { out, count in
            guard let ctx = EVP_MD_CTX_new() else { fatalError("OpenSSL: EVP_MD_CTX_new failed") }
            defer { EVP_MD_CTX_free(ctx) }
            var ok = EVP_DigestInit_ex(ctx, digest, nil) == 1
            if ok, a.count > 0 { ok = EVP_DigestUpdate(ctx, a.baseAddress, a.count) == 1 }
            if ok, b.count > 0 { ok = EVP_DigestUpdate(ctx, b.baseAddress, b.count) == 1 }
            var written: UInt32 = 0
            if ok { ok = EVP_DigestFinal_ex(ctx, out.baseAddress, &written) == 1 }
            precondition(ok && written == UInt32(length), "OpenSSL: \(rawValue) digest failed")
            count = length
        }
    }

    func hash(_ a: [UInt8], _ b: [UInt8] = []) -> [UInt8] {
        a.withUnsafeBytes { pa in b.withUnsafeBytes { pb in hash(pa, pb) } }
    }

    /// HMAC-HASH(key, data) (RFC 2104 with this hash's BLOCKLEN).
    func hmac(key: [UInt8], data: [UInt8]) -> [UInt8] {
        let length = hashLength
        return [UInt8](unsafeUninitializedCapacity: length) { out, count in
            var written: UInt32 = 0
            let r = key.withUnsafeBytes { k in
                data.withUnsafeBytes { d in
                    HMAC(
                        digest, k.baseAddress, Int32(k.count),
                        d.baseAddress?.assumingMemoryBound(to: UInt8.self), d.count,
                        out.baseAddress, &written)
                }
            }
            precondition(r != nil && written == UInt32(length), "OpenSSL: HMAC-\(rawValue) failed")
            count = length
        }
    }

    /// HKDF(chaining_key, input_key_material, num_outputs): 2 or 3 outputs of HASHLEN bytes.
    func hkdf(chainingKey: [UInt8], inputKeyMaterial: [UInt8], outputs: Int) -> [[UInt8]] {
        precondition(outputs == 2 || outputs == 3)
        var tempKey = hmac(key: chainingKey, data: inputKeyMaterial)
        defer { noiseZero(&tempKey) }
        let out1 = hmac(key: tempKey, data: [0x01])
        var input = out1
        input.append(0x02)
        let out2 = hmac(key: tempKey, data: input)
        noiseZero(&input)
        if outputs == 2 { return [out1, out2] }
        input = out2
        input.append(0x03)
        let out3 = hmac(key: tempKey, data: input)
        noiseZero(&input)
        return [out1, out2, out3]
    }
}
