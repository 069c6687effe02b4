namespace Ballast.Iscsi.Login;

/// <summary>Login stages, as in the CSG/NSG fields (RFC 7143 §11.12.3).</summary>
internal enum LoginStage : byte
{
    SecurityNegotiation = 0,
    LoginOperationalNegotiation = 1,
    FullFeaturePhase = 3,
}
