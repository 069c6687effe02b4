namespace Ballast.Iscsi.Negotiation;

/// <summary>The values a login settled (RFC 7143 §13), with the RFC defaults until negotiated.</summary>
internal sealed class OperationalParameters
{
    // Session-wide.
    public bool InitialR2T { get; set; } = true;
    public bool ImmediateData { get; set; } = true;
    public int MaxBurstLength { get; set; } = 262144;
    public int FirstBurstLength { get; set; } = 65536;
    public int MaxOutstandingR2T { get; set; } = 1;
    public bool DataPduInOrder { get; set; } = true;
    public bool DataSequenceInOrder { get; set; } = true;
    public int ErrorRecoveryLevel { get; set; }
    public int MaxConnections { get; set; } = 1;
    public int DefaultTime2Wait { get; set; } = 2;
    public int DefaultTime2Retain { get; set; } = 20;

    // Connection-wide.
    public bool HeaderDigest { get; set; }
    public bool DataDigest { get; set; }

    /// <summary>What the initiator accepts per PDU: the bound for Data-In and other PDUs we send (default 8192, §13.12).</summary>
    public int InitiatorMaxRecvDataSegmentLength { get; set; } = 8192;

    /// <summary>What we declared: the bound for PDUs we receive.</summary>
    public int TargetMaxRecvDataSegmentLength { get; set; } = 8192;
}
